"""Offers: the decision policy (every rule and default once), campaigns, message templates, the decision worker."""
