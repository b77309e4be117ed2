"""Tests of stk_menus/: the CAT codec, alpha identifiers, the menu tree, replies, the wallet MO format."""
