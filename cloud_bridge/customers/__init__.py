"""Customers: consent, enrolment, CRM import, erasure, phone numbers."""
