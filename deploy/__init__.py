"""Launching and operating clusters: spec -> processes, the supervisor, the `deltaps` CLI."""
