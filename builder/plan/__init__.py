"""Stages, targets and the per-stage ARG/ENV state a build walks through."""
