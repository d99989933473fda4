"""Campaigns: who was contacted and who was held out, and what that measurably saved."""
