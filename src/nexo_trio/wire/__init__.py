"""Wire formats: (de)serialisation with cattrs and orjson, on top of the core's records."""
