"""The replay: a discrete-event simulation of LLM serving that checks a plan against
arrivals, request by request.

- ``events``: a replica's event heap, ordered by (time, priority, sequence number);
- ``engine``: one replica as vLLM runs it (continuous batching, chunked prefill under a token
  budget, KV blocks with preemption by recompute);
- ``router``: which replica each request goes to, honouring the plan's shares, decided up
  front so that replicas run independently;
- ``simulate``: each replica's event loop, in parallel if asked, and what it measures.
"""
