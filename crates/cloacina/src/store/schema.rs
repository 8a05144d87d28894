//! Diesel table definitions, identical for both backends (see `migrations/`).

diesel::table! {
    workflow_executions (id) {
        id -> Text,
        workflow_name -> Text,
        workflow_version -> Text,
        package_id -> Nullable<Text>,
        status -> Text,
        total_tasks -> Integer,
        remaining_tasks -> Integer,
        failed_tasks -> Integer,
        event_seq -> BigInt,
        error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        started_at -> Nullable<BigInt>,
        completed_at -> Nullable<BigInt>,
        dedup_key -> Nullable<Text>,
    }
}

diesel::table! {
    task_executions (execution_id, task_id) {
        execution_id -> Text,
        task_id -> Text,
        position -> Integer,
        dependents -> Text,
        status -> Text,
        remaining_deps -> Integer,
        failed_deps -> Integer,
        attempt -> Integer,
        max_attempts -> Integer,
        recoveries -> Integer,
        ready_at -> Nullable<BigInt>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<BigInt>,
        error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        started_at -> Nullable<BigInt>,
        completed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    contexts (execution_id, owner) {
        execution_id -> Text,
        owner -> Text,
        data -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    execution_events (execution_id, seq) {
        execution_id -> Text,
        seq -> BigInt,
        task_id -> Nullable<Text>,
        kind -> Text,
        attempt -> Nullable<Integer>,
        message -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    cron_schedules (id) {
        id -> Text,
        package_id -> Text,
        tenant -> Text,
        name -> Text,
        workflow -> Text,
        expression -> Text,
        timezone -> Text,
        catch_up -> Text,
        catch_up_max -> Nullable<Integer>,
        next_run_at -> BigInt,
        last_run_at -> Nullable<BigInt>,
        missed_count -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    cron_fires (schedule_id, instant) {
        schedule_id -> Text,
        instant -> BigInt,
        execution_id -> Text,
        fired_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    workflow_executions,
    task_executions,
    contexts,
    execution_events,
    cron_schedules,
    cron_fires
);
