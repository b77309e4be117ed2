"""Tests for the handlers package."""
