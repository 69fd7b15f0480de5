"""Fault tests: killed publishers and subscribers, a restarted broker, a cut or blackholed link;
each reports sent / received / lost / duplicated and peak memory (see RELIABILITY.md)."""
