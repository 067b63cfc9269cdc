//! The connection table: slots reused through a free list, each named by a
//! typed [`ConnId`] (slot index + generation) so that a completion, a timer
//! or a queued wake-up that outlived its connection can never reach the
//! connection that took the slot next.
//!
//! Operations the kernel completes carry the id in their user data
//! (`uring::UserData`: 24 bits of generation, 32 of index); the table wraps
//! generations within [`GENERATION_MASK`] so an id always survives that
//! round trip. Lookups by id check the generation; lookups by bare slot
//! index ([`ConnTable::at_mut`]) are for lists the shard rebuilds every loop
//! turn (the dirty list, the choker's peer ids), where the slot cannot have
//! been reused since the index was taken, or where serving the slot's
//! current connection is harmless (a flush of a connection with nothing to
//! send).

/// Generations wrap within 24 bits: what `uring::UserData` carries.
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

/// A connection's name: its slot and the slot's generation when it was
/// taken. Stale ids (the connection closed, the slot was reused) find
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// An id as an operation's user data carried it back.
    pub fn new(index: u32, generation: u32) -> Self {
        Self {
            index,
            generation: generation & GENERATION_MASK,
        }
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn generation(self) -> u32 {
        self.generation
    }
}

struct Slot<C> {
    generation: u32,
    value: Option<C>,
}

/// Connections by slot; see the module doc.
pub struct ConnTable<C> {
    slots: Vec<Slot<C>>,
    /// Free slots, the most recently freed last (reused first: warm cache).
    free: Vec<u32>,
    live: usize,
}

impl<C> Default for ConnTable<C> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
}

impl<C> ConnTable<C> {
    /// Connections in the table.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// One past the highest slot index ever used.
    pub fn index_bound(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Puts the connection `make` builds (given its id) into a free slot.
    pub fn insert_with(&mut self, make: impl FnOnce(ConnId) -> C) -> ConnId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let id = ConnId::new(index, slot.generation);
        slot.value = Some(make(id));
        self.live += 1;
        id
    }

    /// The connection `id` names, if it is still open.
    pub fn get(&self, id: ConnId) -> Option<&C> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.value.as_ref())
            .flatten()
    }

    /// The connection `id` names, if it is still open.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut C> {
        let slot = self.slots.get_mut(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.value.as_mut())
            .flatten()
    }

    /// Whatever connection holds slot `index` now (see the module doc for
    /// when a bare index is enough).
    pub fn at(&self, index: u32) -> Option<&C> {
        self.slots.get(index as usize)?.value.as_ref()
    }

    /// Whatever connection holds slot `index` now.
    pub fn at_mut(&mut self, index: u32) -> Option<&mut C> {
        self.slots.get_mut(index as usize)?.value.as_mut()
    }

    /// The id of the connection in slot `index`, if any.
    pub fn id_at(&self, index: u32) -> Option<ConnId> {
        let slot = self.slots.get(index as usize)?;
        slot.value
            .as_ref()
            .map(|_| ConnId::new(index, slot.generation))
    }

    /// Takes the connection out of slot `index`; the slot's next
    /// connection gets a new generation, so every id of this one goes
    /// stale.
    pub fn remove(&mut self, index: u32) -> Option<C> {
        let slot = self.slots.get_mut(index as usize)?;
        let value = slot.value.take()?;
        slot.generation = (slot.generation + 1) & GENERATION_MASK;
        self.free.push(index);
        self.live -= 1;
        Some(value)
    }

    /// Every connection with its id, by slot.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &C)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let c = s.value.as_ref()?;
            Some((ConnId::new(i as u32, s.generation), c))
        })
    }

    /// Every connection with its id, by slot.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut C)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| {
            let g = s.generation;
            let c = s.value.as_mut()?;
            Some((ConnId::new(i as u32, g), c))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_id_finds_nothing_after_the_slot_is_reused() {
        let mut t = ConnTable::default();
        let a = t.insert_with(|id| (id, "a"));
        assert_eq!(t.get(a).map(|c| c.1), Some("a"));
        assert_eq!(t.remove(a.index()).map(|c| c.1), Some("a"));
        assert!(t.get(a).is_none());
        let b = t.insert_with(|id| (id, "b"));
        assert_eq!(b.index(), a.index(), "the slot is reused");
        assert_ne!(b.generation(), a.generation());
        assert!(t.get(a).is_none() && t.get_mut(a).is_none());
        assert_eq!(t.get(b).map(|c| c.0), Some(b), "the maker saw its id");
        assert_eq!(t.at(a.index()).map(|c| c.1), Some("b"));
        assert_eq!(t.id_at(a.index()), Some(b));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn removing_twice_or_out_of_range_is_harmless() {
        let mut t = ConnTable::default();
        let a = t.insert_with(|_| 1u8);
        assert!(t.remove(a.index()).is_some());
        assert!(t.remove(a.index()).is_none());
        assert!(t.remove(999).is_none());
        assert!(t.at_mut(999).is_none() && t.id_at(999).is_none());
        assert!(t.is_empty());
        // The free list holds the slot once: two inserts take two slots.
        let b = t.insert_with(|_| 2u8);
        let c = t.insert_with(|_| 3u8);
        assert_ne!(b.index(), c.index());
        assert_eq!(t.index_bound(), 2);
    }

    #[test]
    fn generations_wrap_within_what_user_data_carries() {
        let mut t = ConnTable::default();
        let mut last = t.insert_with(|_| ());
        for _ in 0..3 {
            t.remove(last.index());
            last = t.insert_with(|_| ());
        }
        assert_eq!(last.generation(), 3);
        // Drive the slot's generation to the top of the range.
        t.slots[0].generation = GENERATION_MASK;
        t.remove(0);
        let wrapped = t.insert_with(|_| ());
        assert_eq!(wrapped.generation(), 0);
        assert_eq!(ConnId::new(0, GENERATION_MASK + 5).generation(), 4);
    }

    #[test]
    fn iteration_gives_live_connections_with_their_ids() {
        let mut t = ConnTable::default();
        let ids: Vec<ConnId> = (0..5).map(|i| t.insert_with(move |_| i)).collect();
        t.remove(ids[1].index());
        t.remove(ids[3].index());
        let seen: Vec<(ConnId, i32)> = t.iter().map(|(id, &v)| (id, v)).collect();
        assert_eq!(seen, vec![(ids[0], 0), (ids[2], 2), (ids[4], 4)]);
        for (_, v) in t.iter_mut() {
            *v *= 10;
        }
        assert_eq!(t.get(ids[4]), Some(&40));
    }
}
