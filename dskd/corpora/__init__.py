"""Text readers: every training and sense source kind as a stream of documents, QA records as prompts.

Used by the sense dictionary (:mod:`dskd.senses`), the training stream (:mod:`dskd.data`), the teacher
cache and evaluation; the source config (:class:`dskd.data.config.SourceConfig`) stays with the
config schema.
"""
