// Keysteward's function app on the Flex Consumption plan (Linux, Python 3.11), running as a
// user-assigned managed identity: host storage, tables and queues, Key Vault references and
// Application Insights all authenticate with it, so no app setting holds a key.
//
// App settings are the site's siteConfig.appSettings list, built from fixed entries and one
// Key Vault reference per name in appSecretSettingNames. Every setting Keysteward reads
// (shared/config/settings.py, KEYSTEWARD_SETTINGS) is in appSettings below; tests/test_infra.py checks it.
// FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION are not allowed on Flex Consumption:
// the runtime is functionAppConfig.runtime.

@description('Name of the function app.')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Region of the plan and the app.')
param location string = resourceGroup().location

@description('Tags for the plan and the app (the app also gets azd-service-name).')
param tags object = {}

@description('The service name in azure.yaml that azd deploys to this app.')
param serviceName string = 'api'

@description('Resource id of the user-assigned managed identity the app runs as.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

@description('Name of the storage account (AzureWebJobsStorage, tables, queues, deployment package).')
param storageAccountName string

@description('URL of the blob container the app package is deployed to.')
param deploymentContainerUrl string

@description('Application Insights connection string (it holds no secret: ingestion needs Microsoft Entra ID).')
param applicationInsightsConnectionString string

@description('Name of the Key Vault the app settings reference.')
param keyVaultName string

@description('App setting names apps.yaml references as secrets; each is a Key Vault reference to the secret named like it in lower case with dashes.')
param appSecretSettingNames array = []

@description('KEYSTEWARD_PUBLIC_URL. Empty: https:// and the app\'s default host name.')
param publicUrl string = ''

@description('KEYSTEWARD_ALLOWED_RETURN_URLS: comma-separated URLs a connect flow may return to. Empty: none.')
param allowedReturnUrls string = ''

@description('KEYSTEWARD_WEBHOOK_URL: where lifecycle events are POSTed. Empty: no webhook.')
param webhookUrl string = ''

@description('KEYSTEWARD_REFRESH_SCHEDULE (NCRONTAB, seconds first). Empty: Keysteward\'s default.')
param refreshSchedule string = ''

@description('KEYSTEWARD_EXPIRY_SWEEP_SCHEDULE (NCRONTAB, seconds first). Empty: Keysteward\'s default.')
param expirySweepSchedule string = ''

@description('KEYSTEWARD_LOG_LEVEL. Empty: Keysteward\'s default.')
@allowed([
  ''
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = ''

@description('Memory of each instance, in MB; billing is per GB-second of it.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most instances the app scales out to (Flex Consumption allows 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

// Keysteward's defaults (shared/config/settings.py); tests/test_infra.py checks they agree.
var defaultRefreshSchedule = '0 */5 * * * *'
var defaultExpirySweepSchedule = '0 0 2 * * *'
var defaultLogLevel = 'INFO'

// Key Vault secrets Keysteward reads; the postprovision hook creates them once.
var encryptionKeysSecretName = 'keysteward-encryption-keys'
var webhookSecretSecretName = 'keysteward-webhook-secret'

var storageSuffix = environment().suffixes.storage

// The default host name is <name>.azurewebsites.net in Azure's public cloud. The site cannot read
// its own defaultHostName in its own definition, so it is spelled out here (sovereign clouds: set
// publicUrl); main.bicep outputs the real one as SERVICE_API_URI and the postprovision hook warns
// if the two differ.
var appServiceSuffix = environment().name == 'AzureUSGovernment' ? 'azurewebsites.us' : environment().name == 'AzureChinaCloud' ? 'chinacloudsites.cn' : 'azurewebsites.net'
var keystewardPublicUrl = empty(publicUrl) ? 'https://${name}.${appServiceSuffix}' : publicUrl

var appSettings = [
  // Host storage, and Keysteward's tables and queues: identity-based, no keys.
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: 'https://${storageAccountName}.blob.${storageSuffix}'
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: 'https://${storageAccountName}.queue.${storageSuffix}'
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: 'https://${storageAccountName}.table.${storageSuffix}'
  }
  // Telemetry, sent as the managed identity.
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: applicationInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
  // Keysteward (docs/configuration.md).
  {
    name: 'KEYSTEWARD_ENCRYPTION_KEYS'
    value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${encryptionKeysSecretName})'
  }
  {
    name: 'KEYSTEWARD_PUBLIC_URL'
    value: keystewardPublicUrl
  }
  {
    name: 'KEYSTEWARD_APPS_FILE'
    value: 'apps.yaml'
  }
  {
    name: 'KEYSTEWARD_ALLOWED_RETURN_URLS'
    value: allowedReturnUrls
  }
  {
    name: 'KEYSTEWARD_WEBHOOK_URL'
    value: webhookUrl
  }
  {
    name: 'KEYSTEWARD_WEBHOOK_SECRET'
    value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${webhookSecretSecretName})'
  }
  {
    name: 'KEYSTEWARD_WEBHOOK_RETRY_SECONDS'
    value: '30'
  }
  {
    name: 'KEYSTEWARD_WEBHOOK_MAX_ATTEMPTS'
    value: '8'
  }
  {
    name: 'KEYSTEWARD_REFRESH_SCHEDULE'
    value: empty(refreshSchedule) ? defaultRefreshSchedule : refreshSchedule
  }
  {
    name: 'KEYSTEWARD_EXPIRY_SWEEP_SCHEDULE'
    value: empty(expirySweepSchedule) ? defaultExpirySweepSchedule : expirySweepSchedule
  }
  {
    name: 'KEYSTEWARD_LOG_LEVEL'
    value: empty(logLevel) ? defaultLogLevel : logLevel
  }
  {
    name: 'KEYSTEWARD_REFRESH_LEASE_SECONDS'
    value: '30'
  }
  {
    name: 'KEYSTEWARD_PROVIDER_TIMEOUT_SECONDS'
    value: '20'
  }
  {
    name: 'KEYSTEWARD_ROTATION_GRACE_MINUTES'
    value: '60'
  }
]

// The apps' ${NAME} references (client secrets): Key Vault references, never values.
var appSecretSettings = [for settingName in appSecretSettingNames: {
  name: settingName
  value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${toLower(replace(settingName, '_', '-'))})'
}]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy is not offered in every Flex Consumption region; set zoneRedundant on the plan where it is.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: Browsers and OAuth providers call the connect and callback endpoints without client certificates; API callers authenticate with Keysteward's scoped API keys instead.
  // checkov:skip=CKV_AZURE_222: Keysteward is a public HTTP API: OAuth providers and users' browsers must reach its callback and connect endpoints.
  // checkov:skip=CKV_AZURE_212: Scale to zero is the point of Flex Consumption on demand: no always-ready instances, so an idle deployment costs almost nothing (docs/deploy.md).
  // checkov:skip=CKV_AZURE_213: App Service health checks would ping every instance each minute, billing executions and keeping instances from scaling in; monitor GET /api/health from outside instead.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(appSettings, appSecretSettings)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
    }
  }
}

// No FTP and no basic-auth deployments: azd deploys with a Microsoft Entra ID token.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
output uri string = 'https://${functionApp.properties.defaultHostName}'
output publicUrl string = keystewardPublicUrl
