"""A typed way to make a Blueprint (its constructor is unannotated in azure-functions)."""

import azure.functions as func


def blueprint() -> func.Blueprint:
    return func.Blueprint()  # type: ignore[no-untyped-call]
