"""job-doctor: diagnoses failed BK-JOB steps from BkLog engine logs and answers in WeCom chats."""

__version__ = "0.1.0"
