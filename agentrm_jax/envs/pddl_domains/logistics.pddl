; Logistics (lite): trucks move packages inside a city, airplanes fly them between airports.
; Written for agentrm_jax; the operators of the classic IPC-1998 logistics domain, typed.
(define (domain logistics)
  (:requirements :strips :typing)
  (:types package truck airplane location city)
  (:predicates (in-city ?l - location ?c - city)
               (airport ?l - location)
               (pkg-at ?p - package ?l - location)
               (truck-at ?t - truck ?l - location)
               (plane-at ?a - airplane ?l - location)
               (in-truck ?p - package ?t - truck)
               (in-plane ?p - package ?a - airplane))
  (:action load-truck
    :parameters (?p - package ?t - truck ?l - location)
    :precondition (and (truck-at ?t ?l) (pkg-at ?p ?l))
    :effect (and (not (pkg-at ?p ?l)) (in-truck ?p ?t)))
  (:action unload-truck
    :parameters (?p - package ?t - truck ?l - location)
    :precondition (and (truck-at ?t ?l) (in-truck ?p ?t))
    :effect (and (not (in-truck ?p ?t)) (pkg-at ?p ?l)))
  (:action drive-truck
    :parameters (?t - truck ?from - location ?to - location ?c - city)
    :precondition (and (truck-at ?t ?from) (in-city ?from ?c) (in-city ?to ?c))
    :effect (and (not (truck-at ?t ?from)) (truck-at ?t ?to)))
  (:action load-airplane
    :parameters (?p - package ?a - airplane ?l - location)
    :precondition (and (pkg-at ?p ?l) (plane-at ?a ?l))
    :effect (and (not (pkg-at ?p ?l)) (in-plane ?p ?a)))
  (:action unload-airplane
    :parameters (?p - package ?a - airplane ?l - location)
    :precondition (and (in-plane ?p ?a) (plane-at ?a ?l))
    :effect (and (not (in-plane ?p ?a)) (pkg-at ?p ?l)))
  (:action fly-airplane
    :parameters (?a - airplane ?from - location ?to - location)
    :precondition (and (plane-at ?a ?from) (airport ?from) (airport ?to))
    :effect (and (not (plane-at ?a ?from)) (plane-at ?a ?to))))
