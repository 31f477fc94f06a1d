"""What the bot does with a message: router, conversation, commands."""
