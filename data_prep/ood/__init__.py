"""Out-of-domain audio without recordings: ``python -m data_prep.ood --out DIR --size tiny|small|full``.

:mod:`data_prep.ood.text_sources` (other grammars, generic sentences, near misses),
:mod:`data_prep.ood.non_speech` (silence, noise, hum, clicks, babble),
:mod:`data_prep.ood.generate` (the splits ``ood_train``, ``ood_valid``, ``ood_test``),
:mod:`data_prep.ood.mix` (an in-domain corpus plus the ``unknown`` intent, for outlier exposure).
"""
