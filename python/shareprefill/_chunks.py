"""Chunked prefill: where one planner's sharing state stands in a prompt that transformers feeds
chunk after chunk (a chunk: the queries [start, end) over the keys [0, end)), and what the state
needs before the next layer. Shared by the CPU path (shareprefill.hf) and CudaPrefill."""

FRESH, CARRY, RUN = "fresh", "carry", "run"


class ChunkCursor:
    """The chunk [start, end) of prompt `prompt` (the Planner's reset() counter) whose layers
    the state ran, the last of them, and `origin`, the start of the state's first chunk (a
    state carries only from a chain that began at token 0, as prefill_layer.h asks)."""

    def __init__(self):
        self.prompt = None
        self.start = self.end = self.origin = 0
        self.last_layer = -1

    def next(self, prompt, start, end, layer, layers, carried):
        """Records `layer` of the chunk [start, end) and returns what the state needs first:
        RUN (it is at this chunk and the layer comes after the last one), CARRY (carried: the
        state finished every layer of the chunk that ends at `start`; move it on) or FRESH (a
        new state for the keys [0, end))."""
        if (prompt, start, end) == (self.prompt, self.start, self.end) and layer > self.last_layer:
            step = RUN
        elif (carried and start > 0 and prompt == self.prompt and self.end == start
              and self.last_layer == layers - 1 and self.origin == 0):
            step = CARRY
        else:
            step = FRESH
            self.origin = start
        self.prompt, self.start, self.end, self.last_layer = prompt, start, end, layer
        return step


def cursor_of(planner):
    """The planner's ChunkCursor (made on first use, kept on the planner)."""
    cursor = getattr(planner, "_chunk_cursor", None)
    if cursor is None:
        cursor = planner._chunk_cursor = ChunkCursor()
    return cursor
