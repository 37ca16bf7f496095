"""Verifiers: turn (problem, solution) into a score (DESIGN §8); the LLM judge of reasoning."""
