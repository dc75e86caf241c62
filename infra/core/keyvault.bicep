// The Key Vault holding Keysteward's secrets: the encryption key ring, the webhook signing secret
// and the apps' client secrets. Access is Azure RBAC only. Soft delete and purge protection keep a
// deleted key ring recoverable: losing it loses every credential Keysteward has sealed.
//
// The secrets themselves are not declared here: a redeployment would overwrite a rotated key ring.
// The azd postprovision hook (infra/hooks/keysteward.py) creates the ones Keysteward generates,
// once; operators add the apps' client secrets (docs/deploy.md).

@description('Name of the vault.')
param name string

@description('Region of the vault.')
param location string = resourceGroup().location

@description('Tags for the vault.')
param tags object = {}

@description('Days a deleted vault or secret can still be recovered (7 to 90).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Principal id of the function app\'s managed identity, allowed to read secrets.')
param appPrincipalId string

@description('Principal id of the person or pipeline running azd, allowed to manage secrets. Empty: none.')
param operatorPrincipalId string = ''

@description('Type of operatorPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

// Built-in roles.
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: The function app resolves its Key Vault references from its public outbound addresses (no virtual network integration) and the azd hook writes secrets from the operator's machine, so the firewall allows all networks; access still needs Microsoft Entra ID and an RBAC role (enableRbacAuthorization).
  // checkov:skip=CKV_AZURE_189: Public network access stays enabled for the reason given for CKV_AZURE_109.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource appReadsSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource operatorManagesSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

output name string = vault.name
output endpoint string = vault.properties.vaultUri
