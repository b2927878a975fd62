"""Migration scripts, installed as the package ``sessionstate.migrations``.

Each ``NNN_verb_noun.py`` keeps a frozen copy of the schema it creates, never an import of
``sessionstate.models``: a later change to the models must not rewrite history.
"""
