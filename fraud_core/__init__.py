"""The one contract every component imports: schemas, features, model bundle, scorer."""
