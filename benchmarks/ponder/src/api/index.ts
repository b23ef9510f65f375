// Ponder requires an API file; this benchmark only reads its /status and /ready endpoints.
import { Hono } from "hono";

const app = new Hono();

export default app;
