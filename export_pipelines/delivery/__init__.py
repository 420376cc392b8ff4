"""Delivering finished exports to people: plain functions, no Dagster."""
