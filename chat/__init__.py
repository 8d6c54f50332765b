"""Chat: channels, dialogs and their assignment to agents, reply delivery. Imports acd/
(presence) and below; nothing in acd/ imports chat/."""
