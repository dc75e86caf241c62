// Keysteward on Azure, for `azd up`: a Flex Consumption function app running as a user-assigned
// managed identity, a storage account without shared keys, a Key Vault (RBAC, purge protection)
// for the key ring and client secrets, and Application Insights on a Log Analytics workspace.
// See docs/deploy.md.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment: it names the resource group and seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region for every resource: one that offers the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person or pipeline running azd (azd sets it): may manage the vault\'s secrets, and use the tables and queues for the admin CLI. Empty: no such access.')
param principalId string = ''

@description('Type of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('KEYSTEWARD_PUBLIC_URL, for a custom domain. Empty: https:// and the function app\'s default host name.')
param publicUrl string = ''

@description('KEYSTEWARD_ALLOWED_RETURN_URLS: comma-separated URLs a finished connect flow may redirect to.')
param allowedReturnUrls string = ''

@description('KEYSTEWARD_WEBHOOK_URL: where lifecycle events are also POSTed, signed. Empty: no webhook.')
param webhookUrl string = ''

@description('KEYSTEWARD_REFRESH_SCHEDULE. Empty: Keysteward\'s default, every five minutes.')
param refreshSchedule string = ''

@description('KEYSTEWARD_EXPIRY_SWEEP_SCHEDULE. Empty: Keysteward\'s default, 02:00 UTC.')
param expirySweepSchedule string = ''

@description('KEYSTEWARD_LOG_LEVEL. Empty: Keysteward\'s default, INFO.')
@allowed([
  ''
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = ''

@description('Comma-separated names of the app settings apps.yaml references (client secrets, and client ids not written literally), for example PAGERDUTY_CLIENT_SECRET,OKTA_CLIENT_SECRET. Each becomes a Key Vault reference to the secret of the same name in lower case with dashes (pagerduty-client-secret).')
param appSecretSettings string = ''

@description('Redundancy of the storage account (Standard_LRS everywhere; Standard_ZRS or geo-redundant SKUs where the region offers them).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSkuName string = 'Standard_LRS'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
var appSecretSettingNames = filter(split(replace(appSecretSettings, ' ', ''), ','), settingName => !empty(settingName))

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'core/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitor 'core/monitor.bicep' = {
  name: 'monitor'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
  }
}

module storage 'core/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    deploymentContainerName: 'app-package'
    appPrincipalId: identity.outputs.principalId
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
  }
}

module keyVault 'core/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
  }
}

module functions 'app/functions.bicep' = {
  name: 'functions'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    applicationInsightsConnectionString: monitor.outputs.connectionString
    keyVaultName: keyVault.outputs.name
    appSecretSettingNames: appSecretSettingNames
    publicUrl: publicUrl
    allowedReturnUrls: allowedReturnUrls
    webhookUrl: webhookUrl
    refreshSchedule: refreshSchedule
    expirySweepSchedule: expirySweepSchedule
    logLevel: logLevel
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functions.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.endpoint
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitor.outputs.applicationInsightsName
output SERVICE_API_NAME string = functions.outputs.name
output SERVICE_API_URI string = functions.outputs.uri
output SERVICE_API_PUBLIC_URL string = functions.outputs.publicUrl
