"""The HL7 v2 feed's composition: deciding stored messages (:mod:`.processor`) and running the MLLP
listener inside ``bridge serve`` (:mod:`.runner`). It sits beside :mod:`adapter.pipeline`: it hands
what :mod:`adapter.feeds.hl7_store` stored to :mod:`adapter.scheduling`'s decide step."""
