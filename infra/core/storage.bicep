// The storage account: the Functions host's own storage (AzureWebJobsStorage), Keysteward's tables
// and queues, and the blob container Flex Consumption deploys the app package from. Shared keys are
// off, so every caller authenticates with Microsoft Entra ID; the app's managed identity gets only
// the data roles it needs.

@description('Name of the storage account.')
param name string

@description('Region of the storage account.')
param location string = resourceGroup().location

@description('Tags for the storage account.')
param tags object = {}

@description('Redundancy of the account. Zone- and geo-redundant SKUs are not offered in every region.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Container the app package is deployed to.')
param deploymentContainerName string

@description('Principal id of the function app\'s managed identity.')
param appPrincipalId string

@description('Principal id of the person or pipeline running azd, given table and queue access for the admin CLI. Empty: none.')
param operatorPrincipalId string = ''

@description('Type of operatorPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

// Built-in roles.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

// The only blob containers the app needs: its deployment package, and the two the Functions host
// keeps its locks, timer schedules and keys in. Blob Data Owner is granted on each, not on the account.
var blobContainerNames = [
  deploymentContainerName
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]

// Keysteward creates and uses its own tables and queues: these roles are on the account.
var accountRoles = [
  storageTableDataContributor
  storageQueueDataContributor
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: The function app has no virtual network integration, so it reaches the account through its public endpoint; shared keys are off and every request needs a Microsoft Entra ID token with a data role. Add VNet integration and private endpoints to close the endpoint.
  // checkov:skip=CKV_AZURE_59: Public network access stays enabled for the reason given for CKV_AZURE_35; anonymous access is impossible (no shared keys, no public blob access).
  // checkov:skip=CKV_AZURE_206: Locally redundant by default because every Flex Consumption region offers it; pass skuName Standard_ZRS (or a geo-redundant SKU) where the region supports it and your recovery objectives need it.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in blobContainerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource appOwnsContainers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (containerName, i) in blobContainerNames: {
  name: guid(containers[i].id, appPrincipalId, storageBlobDataOwner)
  scope: containers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource appUsesTablesAndQueues 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in accountRoles: {
  name: guid(storage.id, appPrincipalId, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource operatorUsesTablesAndQueues 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in accountRoles: if (!empty(operatorPrincipalId)) {
  name: guid(storage.id, operatorPrincipalId, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}]

output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
