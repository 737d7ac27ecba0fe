"""Stateful stream scoring from Kafka (Faust)."""
