"""The pet repository: `pets.load(id)` replays a pet's stream, `pets.save(pet)` appends to it."""

from events.store import AggregateRepository

from .domain import Pet

repository: AggregateRepository[Pet] = AggregateRepository(Pet)
load = repository.load
save = repository.save
