"""Tests of stk_menus/: CAT codec, alpha identifiers, menu tree, replies, wallet MO."""
