"""Workflows: each one chains the stages (data, models, diffusion, evaluate) for one command."""
