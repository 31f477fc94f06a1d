"""Chat channels: each turns its wire format into `IncomingMessage`s and sends rendered `Reply`s.

Channels are thin (DESIGN.md principle 4): parsing, signing and sending live here; handlers never
see a channel's JSON.
"""
