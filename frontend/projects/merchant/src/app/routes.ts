import { inject } from '@angular/core';
import { Router, type CanActivateFn, type Routes } from '@angular/router';

import { Session } from './session';
import { Shell } from './shell';

/** Lets signed-in users through; sends others to sign in, and back here afterwards. */
const signedIn: CanActivateFn = (_route, state) =>
  inject(Session).signedIn() || inject(Router).createUrlTree(['/login'], { queryParams: { next: state.url } });

const page = (title: string): string => `${title} · paymesh`;

export const routes: Routes = [
  { path: 'login', loadComponent: () => import('./pages/login').then((m) => m.LoginPage), title: page('Sign in') },
  { path: 'accept', loadComponent: () => import('./pages/accept').then((m) => m.AcceptPage), title: page('Accept invitation') },
  {
    path: '',
    component: Shell,
    canActivate: [signedIn],
    children: [
      { path: '', pathMatch: 'full', redirectTo: 'home' },
      { path: 'home', loadComponent: () => import('./pages/home').then((m) => m.HomePage), title: page('Home') },
      { path: 'payments', loadComponent: () => import('./pages/payments').then((m) => m.PaymentsPage), title: page('Payments') },
      { path: 'payments/:id', loadComponent: () => import('./pages/payment-detail').then((m) => m.PaymentDetailPage), title: page('Payment') },
      { path: 'disputes', loadComponent: () => import('./pages/disputes').then((m) => m.DisputesPage), title: page('Disputes') },
      { path: 'disputes/:id', loadComponent: () => import('./pages/dispute').then((m) => m.DisputePage), title: page('Dispute') },
      { path: 'balance', loadComponent: () => import('./pages/balance').then((m) => m.BalancePage), title: page('Balance') },
      { path: 'payouts', loadComponent: () => import('./pages/payouts').then((m) => m.PayoutsPage), title: page('Payouts') },
      { path: 'events', loadComponent: () => import('./pages/events').then((m) => m.EventsPage), title: page('Events') },
      { path: 'webhooks', loadComponent: () => import('./pages/webhooks').then((m) => m.WebhooksPage), title: page('Webhooks') },
      { path: 'webhooks/:id', loadComponent: () => import('./pages/endpoint').then((m) => m.EndpointPage), title: page('Webhook endpoint') },
      { path: 'api-keys', loadComponent: () => import('./pages/api-keys').then((m) => m.ApiKeysPage), title: page('API keys') },
      { path: 'team', loadComponent: () => import('./pages/team').then((m) => m.TeamPage), title: page('Team') },
    ],
  },
  { path: '**', redirectTo: '' },
];
