"""Delivery: the send outbox, rate limits, SMS encoding and text, SMS providers and their inbound webhooks."""
