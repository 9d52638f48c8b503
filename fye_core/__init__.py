"""Follow-Your-Emoji headless core."""
