"""The replay: a discrete-event simulation of LLM serving that checks a plan against
arrivals, request by request.

- ``events``: the event heap, ordered by (time, priority, sequence number);
- ``engine``: one replica as vLLM runs it (continuous batching, chunked prefill under a token
  budget, KV blocks with preemption by recompute);
- ``router``: which replica an arriving request goes to, honouring the plan's shares;
- ``simulate``: the loop that ties them together and what it measures.
"""
