"""Tests of the VLM backends."""
