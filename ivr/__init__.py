"""Call flows: greeting with extension dialing, menus, business hours, voicemail (issue 3, 5)."""
