"""Durable work: inbox and job queues, their consumers, finished reports, rendering and the outbox that sends each part once."""
