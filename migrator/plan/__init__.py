"""The release plan: models (`models`), YAML loading with positions (`loader`).

The plan is composed from the operations' and the traffic backends' registries, so it
sits above both; their shared model base is `migrator.strict`.
"""
