"""Keysteward's core. Layered: config -> crypto and store -> providers -> lifecycle services.

Nothing in this package imports ``azure.functions``: services never know which trigger called them.
"""
