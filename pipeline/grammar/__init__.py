"""Command grammars as data: Home Assistant intent YAML and Picovoice Rhino contexts in, sampled
sentences with their intent and slots out.

    from pipeline.grammar.load import load_grammar
    from pipeline.grammar.sampler import sample_splits

    grammar = load_grammar("recipes/grammar/conf/fsc.yaml")
    grammar.label_set()                    # intents, and each slot's values plus "none"
    splits = sample_splits(grammar, {"train": 620, "valid": 62, "test_unseen_phrasing": 62}, seed=0)
    splits["train"][0]                     # Sentence(text, intent, slots, shape, phrasing)

Public face: ``load_grammar`` (load), ``sample_splits``/``expand_template`` (sampler), ``Grammar``/
``Sentence``/``GrammarError``/``NONE`` (model), ``homeassistant_house_grammar`` (house). See
``docs/grammar.md`` for the formats.
"""
