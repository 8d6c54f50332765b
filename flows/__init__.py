"""The call flows: greeting, extension dialing, menus, voicemail and queue calls, one layer
above the ACD and IVR decisions."""
