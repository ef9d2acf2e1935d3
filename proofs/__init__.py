"""Propositions about language-model dynamics, each with a proof sketch (.md) and a numerical validation."""
