"""The release plan: models (`models`), YAML loading with positions (`loader`).

Kept free of imports, so `migrator.ops` can use the shared plan types without a cycle.
"""
