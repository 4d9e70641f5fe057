-- Memory (documents, chunks with full-text + vector search, embedding cache) and the knowledge graph.
-- Design notes: domain/memory.py and domain/kg.py docstrings.

-- user_id '' = shared by every user of the agent; otherwise the user's personal document.
CREATE TABLE memory_documents (
    id              uuid PRIMARY KEY DEFAULT uuid_v7(),
    agent_id        uuid         NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    user_id         varchar(255) NOT NULL DEFAULT '',
    path            varchar(500) NOT NULL,
    content         text         NOT NULL,
    hash            char(64)     NOT NULL,              -- sha256 of content, hex
    size            integer      NOT NULL DEFAULT 0,    -- characters
    chunk_count     integer      NOT NULL DEFAULT 0,
    embedded_count  integer      NOT NULL DEFAULT 0,
    embedding_model varchar(200) NOT NULL DEFAULT '',   -- '' = not embedded (full-text only)
    created_at      timestamptz  NOT NULL DEFAULT now(),
    updated_at      timestamptz  NOT NULL DEFAULT now(),
    UNIQUE (agent_id, user_id, path)
);
CREATE INDEX memory_documents_updated_idx ON memory_documents (updated_at DESC, id DESC);

-- One row per chunk. Rows stay inline and uncompressed up to 8 KB (toast_tuple_target, MAIN
-- storage): ranking reads `tsv` of every full-text match, and de-TOASTing it costs 3-4x more.
-- Vectors live in one table per dimension, memory_vectors_<dims>, created on demand by
-- domain/memory.py; `dims`/`emb_model` here say whether (and with which model) a chunk has one.
CREATE TABLE memory_chunks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id uuid         NOT NULL REFERENCES memory_documents (id) ON DELETE CASCADE,
    agent_id    uuid         NOT NULL,                  -- copied from the document, for filtering
    user_id     varchar(255) NOT NULL,
    path        varchar(500) NOT NULL,
    ord         integer      NOT NULL,
    start_line  integer      NOT NULL,
    end_line    integer      NOT NULL,
    text        text         NOT NULL,
    hash        char(64)     NOT NULL,
    tsv         tsvector     GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    dims        integer,
    emb_model   varchar(200),
    CONSTRAINT memory_chunks_vector_chk CHECK ((dims IS NULL) = (emb_model IS NULL))
) WITH (toast_tuple_target = 8160);
ALTER TABLE memory_chunks ALTER COLUMN text SET STORAGE MAIN, ALTER COLUMN tsv SET STORAGE MAIN;
CREATE INDEX memory_chunks_scope_idx ON memory_chunks (agent_id, user_id);
CREATE INDEX memory_chunks_document_idx ON memory_chunks (document_id, ord);
CREATE INDEX memory_chunks_tsv_idx ON memory_chunks USING gin (tsv);

-- Vectors by (provider, model, requested dimensions (0 = the model's default), sha256(text)).
CREATE TABLE embedding_cache (
    provider       varchar(50)  NOT NULL,
    model          varchar(200) NOT NULL,
    dims_requested integer      NOT NULL,
    hash           char(64)     NOT NULL,
    embedding      vector       NOT NULL,
    created_at     timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model, dims_requested, hash)
);

-- Knowledge graph. user_id '' = shared graph of the agent.
CREATE TABLE kg_entities (
    id          uuid PRIMARY KEY DEFAULT uuid_v7(),
    agent_id    uuid             NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    user_id     varchar(255)     NOT NULL DEFAULT '',
    external_id varchar(255)     NOT NULL DEFAULT '',
    name        varchar(500)     NOT NULL,
    entity_type varchar(100)     NOT NULL,
    description text             NOT NULL DEFAULT '',
    properties  jsonb            NOT NULL DEFAULT '{}',
    source_id   varchar(255)     NOT NULL DEFAULT '',
    confidence  double precision NOT NULL DEFAULT 1.0 CHECK (confidence >= 0 AND confidence <= 1),
    -- names rank above types above descriptions; 'simple' keeps names unstemmed for prefix search
    tsv         tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('simple', name), 'A')
                    || setweight(to_tsvector('simple', entity_type), 'B')
                    || setweight(to_tsvector('simple', description), 'C')) STORED,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    updated_at  timestamptz      NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX kg_entities_key ON kg_entities (agent_id, user_id, lower(name), entity_type);
CREATE INDEX kg_entities_recent_idx ON kg_entities (agent_id, user_id, updated_at DESC);
CREATE INDEX kg_entities_tsv_idx ON kg_entities USING gin (tsv);

CREATE TABLE kg_relations (
    id               uuid PRIMARY KEY DEFAULT uuid_v7(),
    agent_id         uuid             NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    user_id          varchar(255)     NOT NULL DEFAULT '',
    source_entity_id uuid             NOT NULL REFERENCES kg_entities (id) ON DELETE CASCADE,
    relation_type    varchar(100)     NOT NULL,
    target_entity_id uuid             NOT NULL REFERENCES kg_entities (id) ON DELETE CASCADE,
    confidence       double precision NOT NULL DEFAULT 1.0 CHECK (confidence >= 0 AND confidence <= 1),
    properties       jsonb            NOT NULL DEFAULT '{}',
    created_at       timestamptz      NOT NULL DEFAULT now(),
    updated_at       timestamptz      NOT NULL DEFAULT now(),
    UNIQUE (agent_id, user_id, source_entity_id, relation_type, target_entity_id)
);
-- traversal walks both ways; INCLUDE makes each hop (which also collects the edges) an index-only scan
CREATE INDEX kg_relations_source_idx ON kg_relations (source_entity_id)
    INCLUDE (target_entity_id, user_id, id, relation_type, confidence);
CREATE INDEX kg_relations_target_idx ON kg_relations (target_entity_id)
    INCLUDE (source_entity_id, user_id, id, relation_type, confidence);
