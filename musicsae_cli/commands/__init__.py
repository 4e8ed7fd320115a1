"""Typer command modules: the only code that imports typer or rich. Services are imported lazily."""
