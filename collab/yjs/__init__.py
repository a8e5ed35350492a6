"""What collab must know of the Yjs update format and of Yrs' behaviour; README.md maps each
workaround to the test that pins it."""
