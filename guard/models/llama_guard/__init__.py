"""Llama Guard: prompt rendering and tokenization (runner and scoring live beside them)."""
