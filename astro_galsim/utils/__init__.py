"""Shared vocabulary of the stages, in private modules made for sharing.

Each ``_*.py`` module here holds one piece of logic that several modules of the
package use (as ``photutils/utils/_*.py`` does); nothing here is public API.
"""
