"""Labels: pass rates per problem and the label history that tells what is stale."""
