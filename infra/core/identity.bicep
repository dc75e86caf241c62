// The user-assigned managed identity Keysteward runs as. It holds no role here: each module that
// creates a resource grants it the one role it needs on that resource.

@description('Name of the managed identity.')
param name string

@description('Region of the managed identity.')
param location string = resourceGroup().location

@description('Tags for the managed identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
