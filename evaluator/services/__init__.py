"""Orchestration between the ORM and the engine (HackSoft-style services)."""
