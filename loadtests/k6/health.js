// Readiness under a constant arrival rate (each request pings Postgres and Redis).
//   k6 run -e BASE_URL=http://127.0.0.1:8080 loadtests/k6/health.js
import http from "k6/http";
import { check } from "k6";
import { BASE_URL, envNumber } from "./lib.js";

export const options = {
  scenarios: {
    ready: {
      executor: "constant-arrival-rate",
      rate: envNumber("RATE", 200),
      timeUnit: "1s",
      duration: __ENV.DURATION || "20s",
      preAllocatedVUs: 20,
    },
  },
  thresholds: { http_req_failed: ["rate<0.01"], checks: ["rate>0.99"] },
};

export default function () {
  const res = http.get(`${BASE_URL}/health/ready`);
  check(res, { "ready is 200": (r) => r.status === 200 });
}
