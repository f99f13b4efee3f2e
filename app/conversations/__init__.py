"""Conversation tracking (CONVERSATIONS.md): normalising and hashing request histories
(`normalise`) and deciding where each stored `/v1/messages` request belongs (`linker`)."""
